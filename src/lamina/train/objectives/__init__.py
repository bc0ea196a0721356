"""Training objectives: SFT, DPO, reward model, PPO arithmetic, and `build` choosing one."""
