"""One event's models: the inbound message (``envelope``), the sample_bankaccount rule
(``rules``) and the audit entry built from them (``entry``)."""
