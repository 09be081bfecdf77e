"""The inspector's Chromium fixture, for the media tests that open a mirrored object in a browser."""

from tests.integration.api.test_inspector import browser

__all__ = ["browser"]
