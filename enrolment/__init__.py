"""Enrolment requests from school coordinators: accounts, the web page, IT approval, DEP assignment, arrival."""

from enrolment.errors import EnrolmentError

__all__ = ["EnrolmentError"]
