"""What several test modules share: the zoo of saved tiny pipelines, the knob conformance
harness, fakes of the search's collaborators and small profiles."""
