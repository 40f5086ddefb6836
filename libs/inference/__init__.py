"""From a trained model to predictions and scores: probabilities, test-time augmentation, CRF, metrics, evaluation."""
