"""App Store apps on the iPads: the app list (`catalogue`), Apps and Books licences and installing
(`licences`), and the compliance fact of each iPad's apps (`status`)."""
