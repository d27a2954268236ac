"""How far a trained CIFAR ResNet student's backbone moved from the teacher blocks it could have started from
(docs/results.md 17): per conv weight, the cosine to the teacher's block (student.init=teacher picks the blocks),
averaged. Near 1: the student still holds the teacher's weights (and maybe its memory of the images the teacher
was trained on); near 0: unrelated (a student trained from scratch).

    python scripts/experiments/teacher_init_drift.py runs/x/best.pt ../shared/models/resnet56-4bfd9763.th [depth=56]
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from distill.checkpoint import load_checkpoint  # noqa: E402
from distill.models import CifarResNet, backbone_module, create_cifar_resnet_classifier, student_from_spec  # noqa: E402
from distill.models.teacher_init import backbone_state_from_teacher  # noqa: E402

ckpt = load_checkpoint(sys.argv[1])
teacher = create_cifar_resnet_classifier(int(sys.argv[3]) if len(sys.argv) > 3 else 56, 10, sys.argv[2])
student = student_from_spec(ckpt["student"])
student.load_state_dict(ckpt["model"])
net = backbone_module(student.backbone)
assert isinstance(net, CifarResNet), "a CIFAR ResNet student"
start, picks = backbone_state_from_teacher(teacher, net)
now = net.state_dict()
cos = {k: torch.nn.functional.cosine_similarity(now[k].flatten().float(), v.flatten().float(), dim=0).item()
       for k, v in start.items() if k.endswith(".weight") and v.dim() == 4}
print(f"{sys.argv[1]}: teacher blocks {picks}; mean cosine of {len(cos)} conv weights to the teacher's "
      f"{sum(cos.values()) / len(cos):.3f} (min {min(cos.values()):.3f}, max {max(cos.values()):.3f})")
