"""comface_hf: ComFace (facial representation learning with synthetic data for comparing faces) for Hugging Face.

The package is grouped by pipeline stage:

* ``comface_hf.synthesis``: face generators (embedded renderer, latent edits of StyleGAN / DCGAN, directions).
* ``comface_hf.pretraining``: pair sampler and curriculum (Eq. 2), SimCLR augmentation; ``training/pretrain.py`` runs it.
* the model, at the top (transformers' layout, and flat because ``trust_remote_code`` copies only flat relative
  imports): ``configuration_*`` / ``modeling_*`` / ``image_processing_comface`` / ``pipeline_comface``, the losses
  (Eq. 1 and the intra-personal regression), saving, cards and the Hub, and the real-photo path it needs
  (``face_alignment``, ``face_frame``, ``face_comparison``, ``peers``).
* ``comface_hf.transfer``: downstream tasks, pairs, folds, linear evaluation and fine-tuning, metrics, tables.
* ``comface_hf.monitoring``: compare and track photos of one person, calibration, saliency; the ``comface`` CLI.
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModel

from . import _moved

from .configuration_comface import ComFaceConfig
from .configuration_facecycle import FaceCycleConfig
from .image_processing_comface import ComFaceImageProcessor
from .losses import inter_personal_loss, intra_personal_loss
from .modeling_change_estimator import ChangeEstimator, ChangeEstimatorConfig
from .modeling_comface import (
    ChangeEstimationOutput,
    ComFaceForChangeEstimation,
    ComFaceModel,
    ComFaceOutput,
    ComFacePreTrainedModel,
)
from .modeling_facecycle import FaceCycleModel, FaceCycleOutput
from .pipeline_comface import FaceChangeEstimationPipeline, register_pipeline

__version__ = "0.1.0"
_moved.install()  # old module paths (comface_hf.pairs, comface_hf.transfer_data, ...) still import, with a warning

AutoConfig.register("comface", ComFaceConfig, exist_ok=True)
AutoModel.register(ComFaceConfig, ComFaceModel, exist_ok=True)
AutoConfig.register("facecycle", FaceCycleConfig, exist_ok=True)
AutoModel.register(FaceCycleConfig, FaceCycleModel, exist_ok=True)
AutoConfig.register("comface-change-estimator", ChangeEstimatorConfig, exist_ok=True)
AutoModel.register(ChangeEstimatorConfig, ChangeEstimator, exist_ok=True)
AutoImageProcessor.register(ChangeEstimatorConfig, image_processor_classes={"torchvision": ComFaceImageProcessor},
                            exist_ok=True)
AutoImageProcessor.register(ComFaceConfig, image_processor_classes={"torchvision": ComFaceImageProcessor}, exist_ok=True)
# save_pretrained copies the code next to the weights, for `trust_remote_code=True` users without comface_hf.
ComFaceConfig.register_for_auto_class()
ComFaceModel.register_for_auto_class("AutoModel")
ComFaceImageProcessor.register_for_auto_class("AutoImageProcessor")
FaceCycleConfig.register_for_auto_class()
FaceCycleModel.register_for_auto_class("AutoModel")
register_pipeline()  # pipeline("face-change-estimation", model=...) in this process

__all__ = [
    "ChangeEstimationOutput",
    "ChangeEstimator",
    "ChangeEstimatorConfig",
    "ComFaceConfig",
    "ComFaceForChangeEstimation",
    "ComFaceImageProcessor",
    "ComFaceModel",
    "ComFaceOutput",
    "ComFacePreTrainedModel",
    "FaceChangeEstimationPipeline",
    "FaceCycleConfig",
    "FaceCycleModel",
    "FaceCycleOutput",
    "inter_personal_loss",
    "intra_personal_loss",
]
