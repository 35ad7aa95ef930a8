"""The serving container: the merged model behind the Vertex AI custom-container contract."""
