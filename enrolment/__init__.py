"""Enrolment requests from school coordinators: accounts, web page, IT approval, DEP assignment, arrival."""

from enrolment.errors import EnrolmentError

__all__ = ["EnrolmentError"]
