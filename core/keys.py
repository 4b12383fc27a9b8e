"""Batch keys, defined once.

Training batches carry a time axis on observations; observations passed to
``select_action`` do not (the policy keeps the history itself).

    OBS_IMAGE      uint8 (B, T_obs, N_cam, 3, H, W)   | (B, N_cam, 3, H, W) at inference
    OBS_STATE      float (B, T_obs, S)                | (B, S) at inference
    OBS_FIRST_IMAGE uint8 (B, N_cam, 3, H, W): the episode's first images (``policy.first_frame``);
                   ``select_action`` keeps them itself
    OBS_FIRST_TOKENS float (B, K, d): the same first images already encoded (``Policy.encode_first_frame``);
                   ``select_action`` passes them at inference so each episode's first images are encoded once
    ACTION         float (B, chunk_size, A)
    ACTION_IS_PAD  bool  (B, chunk_size), True where the chunk ran past the episode end
    TASK           list[str] of length B, the language instruction
    OBS_PRIVILEGED float (B, P), the simulator's full state at the sample's current frame; training
                   batches only, when the dataset recorded it (auxiliary targets, never a policy input)
"""

OBS_IMAGE = "observation.image"
OBS_STATE = "observation.state"
OBS_FIRST_IMAGE = "observation.first_image"
OBS_FIRST_TOKENS = "observation.first_tokens"
ACTION = "action"
ACTION_IS_PAD = "action_is_pad"
TASK = "task"
OBS_PRIVILEGED = "observation.privileged"
