"""Apple Classroom from werne's classes: the classes (ipad.classroom.classes), werne's Classroom CA
(ca), the Education configuration per iPad (education), lesson and exam mode (lessons)."""
