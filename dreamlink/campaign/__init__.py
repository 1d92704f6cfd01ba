"""Campaigns of SITL flights: data collection now, randomised evaluation on Ray later."""
