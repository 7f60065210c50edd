"""podnet on the Kubernetes datastore: the API client, podnet's resources, watches that resume."""
