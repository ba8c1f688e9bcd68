"""The jinja2 templates of symbackprop's documents, shipped as package data (symbackprop.templates)."""
