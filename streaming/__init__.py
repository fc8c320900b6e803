"""Live monitoring: the asyncio engine, its sources and server, and ``jsqa-monitor``."""
