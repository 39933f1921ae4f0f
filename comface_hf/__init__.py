"""comface_hf: ComFace (facial representation learning with synthetic data for comparing faces) for Hugging Face.

Pipeline: `comface_hf.synthesis` (face generator) -> `dataset_builders.comface_synthetic` -> `comface_hf.pairs`
(pair sampler and curriculum) -> `ComFaceModel` and `comface_hf.losses` -> `training/pretrain.py` -> save/push ->
`from_pretrained` -> `ComFaceForChangeEstimation` and `training/transfer.py`.
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModel

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
