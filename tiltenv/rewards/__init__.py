"""Rewards: the gold's links and families, the simulated labels and label sources (AI feedback, shift),
the proxy reward models (base layer, learned kinds, the public facade) and their on-disk cache.

Inside: ``links`` <- ``families``; ``labels``, ``proxy_base`` <- ``feedback``, ``reward_models`` <- ``proxies``
<- ``proxy_cache``. Nothing here imports a world."""
