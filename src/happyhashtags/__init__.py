"""happyhashtags: which hashtags do people use when they are happy?

The library API::

    from happyhashtags import PostCounter, Store, DemoSource, LocalEngine

    store = Store(url="sqlite:///happy.db")
    store.migrate()
    LocalEngine(source=DemoSource(count=1000), counter=PostCounter(), store=store).run()
    print(store.top(limit=5))
"""

from happyhashtags.aggregate import PostCounter
from happyhashtags.engines.local import LocalEngine, RunSummary
from happyhashtags.errors import HappyHashtagsError
from happyhashtags.happy import HappyMatcher, is_happy
from happyhashtags.model import Post
from happyhashtags.sources import DemoSource, FileSource, open_source
from happyhashtags.storage import Store
from happyhashtags.text import extract_hashtags, normalize_hashtag

__version__ = "0.1.0"

__all__ = [
    "DemoSource",
    "FileSource",
    "HappyHashtagsError",
    "HappyMatcher",
    "LocalEngine",
    "Post",
    "PostCounter",
    "RunSummary",
    "Store",
    "__version__",
    "extract_hashtags",
    "is_happy",
    "normalize_hashtag",
    "open_source",
]
