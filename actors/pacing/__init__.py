"""Meta's limits as an actor paces them: the rate bucket, the pair rate, the tier budget."""
