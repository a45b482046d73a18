"""The durable queue: NATS JetStream between reading (``ingest``) and counting (``process``).

* `Ingestor` reads any source into a stream through an on-disk `Spool`, so nothing read is lost
  while NATS is unreachable or ingest is killed.
* `NatsSource` is the stream as a resumable source for the engine: counts and the stream
  position commit together, messages are acknowledged after the commit, and a restart replays
  from a counter snapshot so sessions continue as if nothing happened.
* `queue_status` reports the stream, the consumers' positions, their lag and the dead letters.

See docs/queue.md for the delivery guarantees and the JetStream settings to use in production.
nats-py is needed at run time (``pip install 'happyhashtags[nats]'``); importing this package
does not import it.
"""

from happyhashtags.queue.consumer import NatsSource
from happyhashtags.queue.ingest import Ingestor, IngestSummary, message_id
from happyhashtags.queue.publisher import Publisher
from happyhashtags.queue.spool import Spool, SpoolRecord
from happyhashtags.queue.status import ConsumerStatus, QueueStatus, queue_status
from happyhashtags.queue.url import QueueURL, parse_queue_url

__all__ = [
    "ConsumerStatus",
    "IngestSummary",
    "Ingestor",
    "NatsSource",
    "Publisher",
    "QueueStatus",
    "QueueURL",
    "Spool",
    "SpoolRecord",
    "message_id",
    "parse_queue_url",
    "queue_status",
]
