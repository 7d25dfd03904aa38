"""Topics: the fixed IPTC Media Topic table (:mod:`~transforms.topics.taxonomy`, a leaf), the
built-in multilingual classifier, and the Beam stage that assigns one topic per article.
"""
