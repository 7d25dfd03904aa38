"""Duplicates and stories: exact duplicates by URL, GUID and content hash
(:mod:`~transforms.stories.exact`), the similarity model (sketches, the packaged encoder,
the pair scorer), and the story stage that links echoes across outlets and languages.
"""
