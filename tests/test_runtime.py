"""Process set-up helpers of nnstudy.runtime."""

from __future__ import annotations


def test_background_preload_imports_in_a_daemon_thread_and_stops_quietly_at_a_failure(monkeypatch):
    import sys

    from nnstudy.runtime import preload_in_background

    for name in ("colorsys", "wave"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    thread = preload_in_background("colorsys", "nnstudy_no_such_module", "wave")
    thread.join(timeout=30)
    assert not thread.is_alive() and thread.daemon
    # It stops at the first failure; the import that needs the module raises it later.
    assert "colorsys" in sys.modules and "nnstudy_no_such_module" not in sys.modules
    assert "wave" not in sys.modules
