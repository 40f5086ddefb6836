"""From a trained model to predictions and scores: probabilities, TTA, CRF, metrics, evaluation."""
