from exactcron.entry import main

main()
