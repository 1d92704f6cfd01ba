"""dreamlink: learned world models onboard drones and robots."""

__version__ = "0.1.0"
