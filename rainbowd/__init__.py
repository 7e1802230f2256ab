"""
rainbowd: zero-downtime redeploys for a plain web app on one machine.
"""
