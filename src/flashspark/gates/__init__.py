"""Gates: checks over the client that pass or fail, leaving their evidence behind."""
