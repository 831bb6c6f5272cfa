from exactcron.cli import main

main()
