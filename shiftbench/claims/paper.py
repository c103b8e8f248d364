"""C7 and C8 (Biscione & Bowers 2021), for runs with torchvision's networks (`experiment=paper`); none
for other runs. The rules: `shiftbench.claims.catalogue`.
"""

from __future__ import annotations

from shiftbench.claims.architecture import rates_text, scratch_lrs
from shiftbench.claims.arms import Arms, is_target, label, scratch_label
from shiftbench.claims.forgetting import BB
from shiftbench.claims.verdicts import ABOVE_ZERO, Claim, Rule, judged, paired

FAR_ABOVE = 0.2  # C8: "far above" = the lower 95% bound of the gain exceeds a fifth of the score's range
TORCHVISION = ("DenseNet", "VGG", "TorchvisionResNet")  # `_target_` suffixes of torchvision's networks
IMAGENET_MODES = ("full", "head", "last")  # C8 uses the first of these that ran


def claims(arms: Arms) -> list[Claim]:
  dense = arms.where(lambda a: is_target(a, "DenseNet"))
  vgg16 = arms.where(lambda a: is_target(a, "VGG", depth=16, batch_norm=False))
  out = []
  if dense or vgg16:
    pairs = [(d, v) for d in dense for v in vgg16] or [
      (dense[0] if dense else "(no densenet121)", vgg16[0] if vgg16 else "(no vgg16)")
    ]
    for d, v in pairs:
      (vd, bd), (vv, bv) = arms.scratch(d), arms.scratch(v)
      out.append(
        judged(
          "C7",
          "DenseNet-121 from scratch is more invariant than VGG16 from scratch",
          BB,
          f"{d} - {v}: scratch/full invariance{rates_text((d, bd), (v, bv))}",
          paired(vd, vv),
          ABOVE_ZERO,
          scratch_at="best_validation",
          scratch_lrs=scratch_lrs((d, bd), (v, bv)),
          note=bd.note or bv.note,
        )
      )
  for m in arms.where(lambda a: any(is_target(a, t) for t in TORCHVISION)):
    modes = [mode for mode in IMAGENET_MODES if arms.rates(m, ("imagenet", mode))]
    mode = modes[0] if modes else IMAGENET_MODES[0]
    scratch, best = arms.scratch(m)
    rate = None if best.note else best.rate
    for lr in arms.rates(m, ("imagenet", mode)) or [None]:
      out.append(
        judged(
          "C8",
          f"ImageNet weights give new classes invariance far above scratch (> +{FAR_ABOVE})",
          BB,
          f"{m}: {label('imagenet', mode, lr)} - {scratch_label(best)}",
          paired(arms.values(m, "imagenet", mode, lr), scratch),
          Rule("above", FAR_ABOVE),
          model=m,
          finetune_lr=lr,
          scratch_lr=rate,
          scratch_lrs={m: rate},
          scratch_at="best_validation",
          note=best.note,
        )
      )
  return out
