"""gradguard: protect federated-learning clients from malicious servers."""

from gradguard.errors import GradguardError

__all__ = ["GradguardError"]
__version__ = "0.1.0"
