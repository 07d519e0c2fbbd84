"""The web dashboard's static files (``static/``), served at ``/ui/`` by
``termjobs.http.ui``. Plain JavaScript modules and CSS: nothing is built at install and
nothing is loaded from anywhere but the server."""
