"""The data layer: corpus layouts (`corpora/`), manifests, audio, features and their cache,
the DataModules that serve them fold by fold, the synthetic corpus (`synthetic/`), the
TIM-Net feature files, and the dataset summary (`python -m ser.data`)."""
