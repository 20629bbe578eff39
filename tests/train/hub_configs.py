"""The hub's config.json of every pretrained part JointDiT uses, recorded field by field.

Source of each table: the public `config.json` files of the hub repositories named below (revision `main`),
as diffusers / transformers wrote them. They were written down here without a download (this machine has
no hub access), from the hub files as we know them, the diffusers conversion scripts that produced them
(`scripts/convert_audioldm2_to_diffusers.py` for AudioLDM2) and the libraries' defaults for fields the
writers always save. `UNSURE` names the values we are less sure of; run
`pytest -m gpu tests/train/test_jointdit_gpu.py` or `tests/train/test_hub_configs.py` with the real folders
(JOINTDIT_VIDEO_MODEL / JOINTDIT_AUDIO_MODEL) to compare against the real files.

Only fields that build the model are recorded; bookkeeping keys (`_diffusers_version`, `_name_or_path`,
`architectures`, `model_type`, `torch_dtype`, `transformers_version`) are not.
"""

from __future__ import annotations

SVD = "stabilityai/stable-video-diffusion-img2vid"
AUDIOLDM2 = "cvssp/audioldm2"

SOURCES = {
    "svd_unet": (SVD, "unet/config.json", "UNetSpatioTemporalConditionModel"),
    "svd_vae": (SVD, "vae/config.json", "AutoencoderKLTemporalDecoder"),
    "clip_vision": (SVD, "image_encoder/config.json", "CLIPVisionModelWithProjection"),
    "audioldm2_unet": (AUDIOLDM2, "unet/config.json", "AudioLDM2UNet2DConditionModel"),
    "audioldm2_vae": (AUDIOLDM2, "vae/config.json", "AutoencoderKL"),
    "audioldm2_vocoder": (AUDIOLDM2, "vocoder/config.json", "SpeechT5HifiGan"),
}
"""Shipped config name (train/configs/{paper,tiny}/NAME.json) -> (hub repo, file, class)."""

HUB = {
    "svd_unet": {
        "addition_time_embed_dim": 256,
        "block_out_channels": [320, 640, 1280, 1280],
        "cross_attention_dim": 1024,
        "down_block_types": ["CrossAttnDownBlockSpatioTemporal", "CrossAttnDownBlockSpatioTemporal",
                             "CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"],
        "in_channels": 8,
        "layers_per_block": 2,
        "num_attention_heads": [5, 10, 20, 20],
        "num_frames": 14,
        "out_channels": 4,
        "projection_class_embeddings_input_dim": 768,
        "sample_size": 96,
        "transformer_layers_per_block": 1,
        "up_block_types": ["UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal",
                           "CrossAttnUpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"],
    },
    "svd_vae": {
        "block_out_channels": [128, 256, 512, 512],
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
        "force_upcast": True,
        "in_channels": 3,
        "latent_channels": 4,
        "layers_per_block": 2,
        "out_channels": 3,
        "sample_size": 768,
        "scaling_factor": 0.18215,
    },
    "clip_vision": {
        "attention_dropout": 0.0,
        "dropout": 0.0,
        "hidden_act": "gelu",
        "hidden_size": 1280,
        "image_size": 224,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": 5120,
        "layer_norm_eps": 1e-05,
        "num_attention_heads": 16,
        "num_channels": 3,
        "num_hidden_layers": 32,
        "patch_size": 14,
        "projection_dim": 1024,
    },
    "audioldm2_unet": {
        "act_fn": "silu",
        "attention_head_dim": 8,
        "block_out_channels": [128, 256, 384, 640],
        "class_embed_type": None,
        "class_embeddings_concat": False,
        "conv_in_kernel": 3,
        "conv_out_kernel": 3,
        "cross_attention_dim": [[None, 768, 1024], [None, 768, 1024], [None, 768, 1024], [None, 768, 1024]],
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "downsample_padding": 1,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "in_channels": 8,
        "layers_per_block": 2,
        "mid_block_scale_factor": 1,
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "norm_eps": 1e-05,
        "norm_num_groups": 32,
        "num_attention_heads": None,
        "num_class_embeds": None,
        "only_cross_attention": False,
        "out_channels": 8,
        "projection_class_embeddings_input_dim": None,
        "resnet_time_scale_shift": "default",
        "sample_size": 256,
        "time_cond_proj_dim": None,
        "time_embedding_act_fn": None,
        "time_embedding_dim": None,
        "time_embedding_type": "positional",
        "timestep_post_act": None,
        "transformer_layers_per_block": 1,
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "upcast_attention": False,
        "use_linear_projection": False,
    },
    "audioldm2_vae": {
        "act_fn": "silu",
        "block_out_channels": [128, 256, 512],
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
        "force_upcast": True,
        "in_channels": 1,
        "latent_channels": 8,
        "layers_per_block": 2,
        "norm_num_groups": 32,
        "out_channels": 1,
        "sample_size": 1024,
        "scaling_factor": 0.4110932946205139,
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
    },
    "audioldm2_vocoder": {
        "initializer_range": 0.01,
        "leaky_relu_slope": 0.1,
        "model_in_dim": 64,
        "normalize_before": False,
        "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
        "resblock_kernel_sizes": [3, 7, 11],
        "sampling_rate": 16000,
        "upsample_initial_channel": 1024,
        "upsample_kernel_sizes": [16, 16, 8, 4, 4],
        "upsample_rates": [5, 4, 2, 2, 2],
    },
}
"""NAME -> the hub config.json's model fields (JSON values: lists, null)."""

UNSURE = {
    ("audioldm2_unet", "sample_size"): "written by the conversion script as image_size // 4; the image_size it "
                                       "was run with is not certain (no effect on the weights)",
    ("audioldm2_vae", "sample_size"): "the conversion script's image_size argument (no effect on the weights)",
    ("audioldm2_unet", "cross_attention_dim"): "the leading null (a self-attention transformer per block) is "
                                               "inferred from the 347M parameter count of the full UNet",
    ("audioldm2_unet", "attention_head_dim"): "the conversion script does not set it, so diffusers' default 8 is "
                                              "saved (AudioLDM2's own code uses 32 channels per head instead)",
    ("audioldm2_vae", "force_upcast"): "present only if the file was written by diffusers >= 0.19 (default true)",
    ("clip_vision", "initializer_factor"): "transformers writes its default; not used by a pretrained load",
}
"""(NAME, field) -> why the recorded value is less certain than the rest."""

LEGACY_FIELDS = {
    ("clip_vision", "dropout"): "a CLIPVisionConfig argument in transformers 4.x, which wrote the hub file; unused "
                                "by the model, newer transformers keep it as a plain attribute",
}
"""(NAME, field) in the hub file that the installed library no longer takes as a named argument."""

SIZE_FIELDS = {
    "svd_unet": {"addition_time_embed_dim", "block_out_channels", "cross_attention_dim", "layers_per_block",
                 "num_attention_heads", "projection_class_embeddings_input_dim", "sample_size"},
    "svd_vae": {"block_out_channels", "down_block_types", "layers_per_block", "sample_size"},
    "clip_vision": {"hidden_size", "image_size", "intermediate_size", "num_attention_heads", "num_hidden_layers",
                    "patch_size", "projection_dim"},
    "audioldm2_unet": {"block_out_channels", "cross_attention_dim", "layers_per_block", "norm_num_groups",
                       "sample_size"},
    "audioldm2_vae": {"block_out_channels", "layers_per_block", "norm_num_groups", "sample_size"},
    "audioldm2_vocoder": {"resblock_dilation_sizes", "resblock_kernel_sizes", "upsample_initial_channel",
                          "upsample_kernel_sizes", "upsample_rates"},
}
"""Fields a tiny test config may shrink. Every other field must equal the paper (= hub) value. Of a size
field that is a list of block types, the tiny config may have fewer entries, each one of the paper's types;
of `cross_attention_dim` the widths may shrink but the null (self-attention) positions must stay."""
