"""Latent diffusion: the KL autoencoder, the DiT denoiser, the samplers and the pipeline."""
