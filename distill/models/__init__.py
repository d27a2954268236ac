"""Model factory: backbones by name, students with named heads, CIFAR ResNets for the shared weights."""

from .cifar_resnet import CifarResNet
from .registry import (
    create_backbone,
    create_cifar_resnet_classifier,
    create_student,
    backbone_module,
    list_backbones,
    load_backbone_state,
    load_backbone_weights,
    register_backbone,
    student_from_spec,
)
from .student import HEADS_BY_METHOD, Student, StudentSpec
from .registry import default_student_preprocess
from .timm_backbone import TimmBackbone, resolve_pretrained, timm_preprocess

__all__ = [
    "CifarResNet", "HEADS_BY_METHOD", "Student", "StudentSpec", "create_backbone", "create_cifar_resnet_classifier",
    "create_student", "list_backbones", "backbone_module", "load_backbone_state", "load_backbone_weights",
    "register_backbone", "student_from_spec",
    "TimmBackbone", "default_student_preprocess", "resolve_pretrained", "timm_preprocess",
]
