"""Corpora, manifests, audio loading and LightningDataModules."""
