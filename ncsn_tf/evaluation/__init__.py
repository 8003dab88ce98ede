"""What a trained model produces and how good it is: samples and their judges, inpainting and
colourisation, IS/FID/KID of images, exact toy metrics, likelihoods."""
