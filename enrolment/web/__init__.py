"""The coordinators' web page (German UI): log in, request enrolment, follow each serial; admin
pages to approve or reject. Server-rendered jinja2 on Starlette, no JavaScript build step."""
