"""`python -m nocturna_infra.status`: its command line (`cli`) and its report (`report`)."""
