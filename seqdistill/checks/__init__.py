"""Filter rules and answer checkers."""
