"""The fixed topic table: the 17 top-level IPTC Media Topics and ``unclassified``.

A leaf module (no imports from the project), so the classifier, the source lists and the
Parquet sink can all read the table without importing each other.
"""

from __future__ import annotations

UNCLASSIFIED = "unclassified"

MEDIA_TOPICS: dict[str, tuple[str, str]] = {
    # slug: (IPTC code, label)
    "arts-culture-entertainment-media": ("medtop:01000000",
                                         "arts, culture, entertainment and media"),
    "crime-law-justice": ("medtop:02000000", "crime, law and justice"),
    "disaster-accident-emergency": ("medtop:03000000",
                                    "disaster, accident and emergency incident"),
    "economy-business-finance": ("medtop:04000000", "economy, business and finance"),
    "education": ("medtop:05000000", "education"),
    "environment": ("medtop:06000000", "environment"),
    "health": ("medtop:07000000", "health"),
    "human-interest": ("medtop:08000000", "human interest"),
    "labour": ("medtop:09000000", "labour"),
    "lifestyle-leisure": ("medtop:10000000", "lifestyle and leisure"),
    "politics-government": ("medtop:11000000", "politics and government"),
    "religion": ("medtop:12000000", "religion"),
    "science-technology": ("medtop:13000000", "science and technology"),
    "society": ("medtop:14000000", "society"),
    "sport": ("medtop:15000000", "sport"),
    "conflict-war-peace": ("medtop:16000000", "conflict, war and peace"),
    "weather": ("medtop:17000000", "weather"),
}
TOPIC_SLUGS = frozenset(MEDIA_TOPICS) | {UNCLASSIFIED}
