"""Audio as the generators see it: per-video-frame features and their per-latent-frame windows."""
