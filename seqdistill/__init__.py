"""seqdistill: sequence distillation from a teacher model to a student, one stage per command."""

__version__ = "0.1.0"
