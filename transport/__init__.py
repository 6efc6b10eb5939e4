"""The network side: an aiohttp + aiortc server around the engine (`ihuman serve`)."""
