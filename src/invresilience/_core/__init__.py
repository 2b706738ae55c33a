"""Pure decision cores: no I/O, no clock reads, no contextvars; ``now`` is always passed in.

The public shells (:mod:`invresilience._retry` and friends) ask these cores what to do,
do the I/O or the sleeping, and report back. Nothing here imports from the rest of the
package.
"""
