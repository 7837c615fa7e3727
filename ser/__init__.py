"""ser: speech emotion recognition with MS-SENet and TIM-Net, faithful, fast and tested."""

__version__ = "0.1.0"
