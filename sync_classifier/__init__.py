"""Audio-visual synchronization classifier (AVSync15 supplement Sec. 1-2): R(2+1)D video encoder,
2-D conv audio encoder, MLP head phi(a, v); 21-offset contrastive training, 31-offset evaluation,
P_Sync scorer. See docs/sync_classifier.md."""

from .config import ClipSpec, ModelConfig, TrainConfig
from .model import SyncClassifier
from .score import SyncScorer
from .synthetic import make_sounding_video, write_synthetic_folder

__all__ = ["ClipSpec", "ModelConfig", "TrainConfig", "SyncClassifier", "SyncScorer", "make_sounding_video", "write_synthetic_folder"]
