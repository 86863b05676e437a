from foliosim.cli import main

main()
