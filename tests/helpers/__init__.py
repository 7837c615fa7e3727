"""What tests share besides fixtures (those stay in tests/conftest.py): tiny configs,
generated corpus trees and audio, feature files, forged files, CLI runs, W&B records."""
