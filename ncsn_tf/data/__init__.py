"""Data: the input pipelines (pipeline.py) and the sources they read (toy 2-D
distributions, tfds and image folders, procedural shapes, scikit-learn digits).
Which dataset is which kind is ncsn_tf/catalog.py's."""
