"""credit_pd.serving.worker: process-level set-up of a worker."""

from __future__ import annotations


def test_start_up_objects_are_frozen_out_of_gc_scans():
    import gc

    from credit_pd.serving.worker import freeze_startup_objects

    try:
        freeze_startup_objects()
        assert gc.get_freeze_count() > 0
        assert gc.isenabled(), "objects created after start-up must still be collected"
    finally:
        gc.unfreeze()
