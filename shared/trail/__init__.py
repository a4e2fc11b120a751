"""Reading the trail (``reading``), the timeline (``timeline``), the comparison with Dataverse
(``reconcile``) and the regarding look-up through the Web API (``resolver``)."""
