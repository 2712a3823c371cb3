"""featmatch models; each module registers its models with :mod:`featmatch.registry`."""
