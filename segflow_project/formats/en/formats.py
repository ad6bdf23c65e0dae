# How the admin writes dates and times: short, sortable, the same on every page (all times are
# UTC, TIME_ZONE). Django's own English ("Dec. 2, 2026, 7:20 p.m.") widened every list.
DATE_FORMAT = "Y-m-d"
DATETIME_FORMAT = "Y-m-d H:i"
SHORT_DATE_FORMAT = "Y-m-d"
SHORT_DATETIME_FORMAT = "Y-m-d H:i"
